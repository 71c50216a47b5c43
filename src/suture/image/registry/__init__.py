"""Registry access over the OCI distribution API: client, authentication, pull and push."""
