"""tfbridge."""
