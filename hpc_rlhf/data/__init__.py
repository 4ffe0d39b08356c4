"""Reading users' data files: prompt sets, SFT examples (sft.py), preference pairs (pairs.py), tables (tables.py),
and chat rendering (chat.py).

Imports nothing of the package but errors and the config schema (whose sections name the files and columns),
so rollout/, models/, stages/ and the run preparation (launch/prepare.py) all read data the same way."""
