"""The control plane: the controller actor, its reconcile loop and state machines
(deployments, proxies, autoscaling), its checkpoint and recovery, and its IO seam."""
