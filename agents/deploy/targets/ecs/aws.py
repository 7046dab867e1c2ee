"""AWS as the ECS, EC2 and Lambda targets use it, through boto3.

:class:`Aws` opens clients from the standard credential chain (environment, shared files, SSO, the
instance or task role) in the environment's region; botocore itself honours ``AWS_ENDPOINT_URL`` (and
``AWS_ENDPOINT_URL_<SERVICE>``), which is how the tests reach ``moto_server`` on loopback. Every call
goes through :meth:`Aws.call`: counted and timed (``stats``, so that a benchmark can tell AWS's time
from ours) and its errors translated into ones that say what to fix: no credentials, a refused
permission (naming the IAM action), an endpoint out of reach.
"""
from __future__ import annotations

import os
import time
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from agents.deploy.targets.kubernetes.api import CallStats
from orchestra.errors import StageFailed

DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException",
          "InvalidClientTokenId", "InvalidSignatureException", "SignatureDoesNotMatch", "ExpiredToken",
          "ExpiredTokenException", "AuthFailure"}
IAM_PREFIX = {"ecs": "ecs", "elbv2": "elasticloadbalancing", "cloudwatch": "cloudwatch", "logs": "logs",
              "secretsmanager": "secretsmanager", "lambda": "lambda", "ecr": "ecr", "sts": "sts",
              "ec2": "ec2", "autoscaling": "autoscaling"}
CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})


class AwsError(StageFailed):
    """AWS refused a call or could not be reached."""

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class Aws:
    """boto3 clients of one region, each call counted, timed and its errors explained."""

    def __init__(self, region: str | None, *, session: boto3.session.Session | None = None) -> None:
        self.session = session or boto3.session.Session(region_name=region)
        if not self.session.region_name:
            raise AwsError("no AWS region is set", hint="set environments.<env>.ecs.region (or lambda.region) "
                                                        "in devops_orchestra.yaml, or AWS_REGION")
        self.region = str(self.session.region_name)
        self._clients: dict[str, Any] = {}
        self.stats = CallStats()

    def client(self, name: str) -> Any:
        if name not in self._clients:
            self._clients[name] = self.session.client(name, config=CLIENT_CONFIG)  # type: ignore[call-overload]
        return self._clients[name]

    def call(self, api: str, operation: str, /, **params: Any) -> dict[str, Any]:
        """``client(api).<operation>(**params)``; AwsError says what went wrong and what to do."""
        action = f"{IAM_PREFIX.get(api, api)}:{''.join(p.title() for p in operation.split('_'))}"
        started = time.perf_counter()
        try:
            return dict(getattr(self.client(api), operation)(**params))
        except ClientError as exc:
            raise _refused(exc, action) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise AwsError(f"no AWS credentials for {action}: {exc}",
                           hint="give the bot credentials the standard way: AWS_ACCESS_KEY_ID and "
                                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance/task role") from exc
        except EndpointConnectionError as exc:
            where = os.environ.get("AWS_ENDPOINT_URL")
            said = f" (AWS_ENDPOINT_URL={where})" if where else ""
            raise AwsError(f"AWS could not be reached for {action}: {exc}{said}",
                           hint="check AWS_ENDPOINT_URL (unset it to use AWS itself), the region and the "
                                "network") from exc
        except NoRegionError as exc:
            raise AwsError(f"no AWS region for {action}", hint="set the environment's region") from exc
        except BotoCoreError as exc:
            raise AwsError(f"AWS call {action} failed: {exc}", hint="check the endpoint and the network") from exc
        finally:
            self.stats.calls += 1
            self.stats.seconds += time.perf_counter() - started
            self.stats.by_call[action] = self.stats.by_call.get(action, 0) + 1

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def _refused(exc: ClientError, action: str) -> AwsError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", "")).splitlines()[0][:300] if error.get("Message") else ""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in DENIED or status == 403:
        return AwsError(f"AWS refused {action}: {code}: {message}", code=code,
                        hint=f"grant the bot's IAM identity `{action}` on this resource (or check that its "
                             "credentials are valid and not expired)")
    return AwsError(f"AWS {action} failed: {code or status}: {message}", code=code,
                    hint="see the message; nothing after this call was changed")
