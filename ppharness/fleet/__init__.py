"""`ppbench fleet`: a claim recipe's sides launched on EC2 through SkyPilot, their records brought back.

spec.py reads configs/fleet.yaml (budgets, the environment of each backend, the sides of each
recipe); plan.py turns run files into one SkyPilot task per side with its cost bound, from any host
and without SkyPilot; ami.py resolves the public SSM parameter of each side's AMI (boto3);
orchestrate.py launches the sides in parallel, waits, collects, and tears every cluster down, against
any client with the `Client` protocol; skypilot.py is that client for SkyPilot itself, the only module
that imports `sky` (an optional extra, `pip install 'ppharness[fleet]'`), inside its methods.
"""
