"""One REST client per platform that sync writes back to, speaking the platform's nouns."""
