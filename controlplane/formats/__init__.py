"""Date and time formats of the admin, by language (settings.FORMAT_MODULE_PATH)."""
