"""Let accelerate run FSDP in CPU processes (gloo), for the two-process test of ``configs/fsdp.yaml``.

accelerate 1.16 turns ``ACCELERATE_USE_FSDP`` into ``DistributedType.FSDP`` only on accelerators:
``AcceleratorState`` leaves a CPU run as ``MULTI_CPU`` and drops the FSDP plugin. torch's FSDP2
(``fully_shard``) itself runs on CPU with gloo, so this file (put on ``PYTHONPATH``, which Python
imports at start-up) restores the plugin and the type after that one check; all else is unchanged.
"""

import os

if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
    from accelerate import state
    from accelerate.utils import DistributedType

    _accelerator_state_init = state.AcceleratorState.__init__

    def _init_with_cpu_fsdp(self, *args, fsdp_plugin=None, **kwargs):
        _accelerator_state_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU and fsdp_plugin is not None:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    state.AcceleratorState.__init__ = _init_with_cpu_fsdp
