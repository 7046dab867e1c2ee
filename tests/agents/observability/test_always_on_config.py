"""observability.always_on, interval and guard: what the file may say, and what is refused with how to fix it."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from orchestra.config.sections import Observability


def test_the_defaults_look_at_every_live_release_each_minute_and_roll_back_within_a_day() -> None:
    obs = Observability()
    assert (obs.always_on, obs.interval, obs.guard) == (True, 60.0, 86400.0)
    assert Observability.model_validate({"always_on": False, "interval": "5s", "guard": "2h"}).guard == 7200.0


@pytest.mark.parametrize(("field", "value", "says"), [
    ("interval", "4s", "observability.interval = 4s is too short"),
    ("interval", "500ms", "write 5s or more"),
    ("interval", "soon", "is not a duration"),
    ("guard", "-1h", "is not a duration"),
    ("guard", "forever", "is not a duration"),
    ("always_on", "sometimes", "valid boolean"),
    ("always_watch", True, "Extra inputs are not permitted"),
])
def test_a_bad_value_is_refused_saying_what_to_write(field: str, value: object, says: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Observability.model_validate({field: value})
    assert says in str(refused.value)
