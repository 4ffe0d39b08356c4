"""Reading users' data files: prompt sets, SFT examples, preference pairs (tables.py), and chat rendering (chat.py).

Imports nothing of the package but errors, so rollout/, models/ and stages/ can all read data the same way."""
