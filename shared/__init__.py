"""The shared schema and the small pieces every service uses."""
