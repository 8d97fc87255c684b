"""The training system shared by pre-training and fine-tuning.

mesh: the device mesh and batch sharding; optim: optimizer and schedules;
state: the train state, created directly sharded; step: the jitted train and
eval steps; tasks: what differs between pre-training and fine-tuning;
loop: the one training loop; reporting: metric lines, JSONL and TensorBoard.
"""
