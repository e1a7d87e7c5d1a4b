"""Training: loop with exact resume, evaluation, data parallelism over torch.distributed."""

from asa_deploy.train.config import TrainConfig
from asa_deploy.train.evaluation import evaluate
from asa_deploy.train.loop import evaluate_run, load_run, prepare, train

__all__ = ["TrainConfig", "evaluate", "evaluate_run", "load_run", "prepare", "train"]
