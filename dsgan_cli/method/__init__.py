"""The method: DSGAN's networks and losses, the frozen pretrained nets they use, and the typed recipe."""
