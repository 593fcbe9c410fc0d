"""Config: TOML text -> validated pydantic models (Desired), with positioned errors."""
