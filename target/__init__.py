"""The built-in test target, the third process beside the coordinator and the agents: a small, fast
HTTP/1.1 server to aim loadgen at (``loadgen target``). See :mod:`target.server`."""
