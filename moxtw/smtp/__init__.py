"""SMTP pieces shared by the server, the client and the queue: addresses and reply codes."""
