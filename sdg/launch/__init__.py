"""Where a run executes beyond one process: one Slurm job of N nodes (submitit), Ray across its nodes.
The run itself is sdg.run's; this package supplies the Ray executor and what gets nodes to it.

ray_executor.py  RayExecutor: a run's pending units, in calls, to one worker per node
worker.py        NodeWorker, the per-node Ray actor (engine_session + run_slice); WorkerResult
node.py          node_main(cfg): teacher up -> Ray head/join via rendezvous -> node 0 runs sdg.run.generate
cluster_plan.py  pure: the job's sbatch parameters, a node's teacher config
submit.py        submitit: submit(cfg) -> Job (one task per node), requeue = same call again
raynode.py       `ray start --block` per node with its own ports, stopped by process group
rendezvous.py    the job folder's files: rendezvous, node records (NodeRecord), done
jobs.py          earlier jobs from their folders: status, logs, cancel
sweep.py         run_sweep: -m locally, or as ONE Slurm array
"""
