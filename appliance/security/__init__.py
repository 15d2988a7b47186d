"""The device's secrets (ssh key, bearer token) and the middleware that checks the token on requests."""
