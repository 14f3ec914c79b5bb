"""What the pre-publication hooks are made of: their configuration, normalised text, term lists, the webhook."""
