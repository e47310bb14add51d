"""The run loop, its settings, cancel/pause, events, checkpoints and listeners.

    engine = Engine(method, task, EngineConfig(steps=100), out_dir, listeners, control)
    result = engine.run()
"""

from uda_core.engine.config import EngineConfig
from uda_core.engine.control import RunControl
from uda_core.engine.loop import Engine, EngineTask, RunResult

__all__ = ["Engine", "EngineConfig", "EngineTask", "RunControl", "RunResult"]
