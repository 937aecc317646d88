"""meshctl demo: a newcomer's first run of a whole mesh, no API key needed.

    scenario.py  what the demo does, as data: the scratch repository, the config of its
                 mesh, one task in plain words per role, the sentence of each step (pure)
    agent.py     the scripted stand-in for an agent CLI that the scratch mesh runs
                 ([agents.demo], a text agent): it acts by role, at once, deterministically
    runner.py    the steps, each running the real commands (meshctl init, meshctl execute,
                 queue-results, file-lock, mesh-spawn, meshctl status/down) on the scratch
                 mesh; the cleanup every way out of it runs
"""
