"""Training a VAE: the loop, its Keras callback, the tf.data pipeline and background jobs.

One module a concept:

* ``loop``: ``train_vae``, ``train_and_save``, ``training_statistics``;
* ``callback``: ``LiveHistory``, the Keras callback (imports Keras);
* ``pipeline``: the tf.data batches, flips, shifts and memory-map gather (imports TensorFlow);
* ``schedules``: the KL weight and learning rate over a run;
* ``events``: the progress events a training sends;
* ``distribute``: tf.distribute strategies and which process saves;
* ``jobs``: ``TrainingJob`` in a thread, the server's slots and its shutdown.

Importing this package does not import TensorFlow; the names below are the
public ones, each defined in (and, for the limits, read from) its own module.
"""

from dogvae.training.distribute import STRATEGIES, is_chief, make_strategy
from dogvae.training.jobs import TrainingJob, TrainingSlots, save_running_jobs, stop_running_jobs
from dogvae.training.loop import TrainResult, train_and_save, train_vae, training_statistics
from dogvae.training.schedules import kl_weight_for_epoch, learning_rate_at

__all__ = [
    "STRATEGIES",
    "TrainResult",
    "TrainingJob",
    "TrainingSlots",
    "is_chief",
    "kl_weight_for_epoch",
    "learning_rate_at",
    "make_strategy",
    "save_running_jobs",
    "stop_running_jobs",
    "train_and_save",
    "train_vae",
    "training_statistics",
]
