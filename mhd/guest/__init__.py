"""The harness's in-guest half: what runs inside each test guest (stdlib only).

stage2.sh starts the agent (``python -m mhd.guest.agent``) with the host venv's python over 9p; it
preloads daxmode and pytest and forks the zygote, so every later Python command is a warm fork
(mhd.guest.warm).  Bring-up, facts and the private network run as ``python -m mhd.guest.<name>``
through the agent.  Nothing here imports mhd.host: a guest's start-up pays ~50x for every import.
"""
