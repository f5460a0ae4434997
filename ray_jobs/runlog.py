"""The callback that keeps a Train run's record (`cvcore.runlog`). It runs in Ray Train's controller,
which unpickles it and the loop config before it starts the workers: this module imports neither
timm nor cvcore's training code (nor do `build_trainer`'s loop and its config), which saves the controller about 3 s."""

import ray.train

from cvcore.runlog import RunLog


class RunLogCallback(ray.train.UserCallback):
    """Every report to OUTPUT's TensorBoard events and metrics.jsonl. The controller is pinned to the
    driver's node, so the files land beside the job's other outputs."""

    def __init__(self, output: str):
        self.log = RunLog(output)

    def after_report(self, run_context, metrics, checkpoint):
        self.log.write(metrics[0])
