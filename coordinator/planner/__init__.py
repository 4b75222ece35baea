"""The central planner's side: its commands (cli, console, sites), what it reads of a run (runs),
the report, key and certificate provisioning, and the harnesses that run a whole federation on one
machine (demo, simulate, inprocess, deployment). The ServerApp imports none of it."""
