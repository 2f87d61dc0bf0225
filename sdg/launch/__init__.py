"""Where a run executes beyond one process: one Slurm job of N nodes (submitit), Ray across its nodes.

plan.py        pure: a node's teacher replicas, the job's sbatch parameters, work items
submit.py      submitit: submit(cfg) -> Job (one task per node), requeue = same call again
node.py        node_main(cfg): teacher up -> Ray head/join via rendezvous -> driver or worker -> stop
raynode.py     `ray start --block` per node with its own ports, stopped by process group
rendezvous.py  the job folder's files: rendezvous, node records, done
driver.py      node 0: plan once, hand out work items, write the outputs
worker.py      the per-node Ray actor that runs items against its node's teacher
jobs.py        earlier jobs from their folders: status, logs, cancel
"""
