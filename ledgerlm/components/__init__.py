"""Parts several stages share, below every stage (no stage lives here): the optimizer, learning-rate schedules,
checkpoint/resume, multi-process training (DDP/FSDP2), weight averaging (EMA, snapshots), statistics (confidence
intervals, paired tests, a stage's `effect`) and the chat format (template, rendering, conversation files)."""
