"""pytest: ``tools.py`` and ``agent_loop.py`` subclass veRL's classes, and veRL lives in its own
environment (``.venv-verl``). There ``tests/verl_env`` tests them; here, where veRL is not
installed, their doctest collection is left out."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("verl") else ["tools.py", "agent_loop.py"]
