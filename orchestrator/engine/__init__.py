"""The training engine: the train step and loop, checkpoint I/O, a job's evaluation."""
