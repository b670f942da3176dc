"""Links to devices: protocols that cameras and device agents speak to the cloud."""
