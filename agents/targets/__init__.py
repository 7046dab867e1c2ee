"""Deploy targets (local Docker, Kubernetes, ECS)."""
