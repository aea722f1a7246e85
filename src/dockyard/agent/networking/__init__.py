"""awsvpc task networking on the agent: a network namespace per task held by a pause container
(from a warm pool), an address on the Dockyard network of the task's subnet, and the task's
security groups as nftables ingress rules in that namespace, replaced atomically when they change.

    firewall.py   PURE: resolved rules -> one nft script (flush + define, applied as one transaction)
    pause.py      the pause image (built locally FROM scratch: busybox ``sleep``), the warm pool,
                  subnet networks, attach/detach of a task's interface
    rules.py      keeps every awsvpc task's rules current (DockyardAgentV1.NetworkRules, 4 times a second)
"""
