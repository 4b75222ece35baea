"""What the coordinator's code may reach: the ServerApp aggregates; it imports no node code, no
planner module and no learning library (a coordinator host needs none of them)."""

import json
import subprocess
import sys

FORBIDDEN = ("warehouse_node", "coordinator.planner", "torch")


def test_the_serverapps_import_closure_holds_no_node_planner_or_torch_module():
    probe = "import json, sys, coordinator.server_app; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True).stdout)
    assert "coordinator.aggregation" in loaded and "common.crypto" in loaded  # the probe sees the app
    assert not [m for m in loaded if m.startswith(FORBIDDEN)]
