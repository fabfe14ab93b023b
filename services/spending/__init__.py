"""The spending service: spend requests and purchases."""
