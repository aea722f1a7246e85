"""Load balancing: the HAProxy data plane of ELBv2 load balancers, and the seam ECS services use.

keys.py, records.py   where documents live and how they are read by ARN
registrations.py      register / deregister (drain) / health of targets: the services' seam
model.py   PURE       store documents -> LbSpec per load balancer
config.py  PURE       LbSpec -> haproxy.cfg
plan.py    PURE       LbSpec + ``show servers state`` -> runtime API commands
observe.py PURE       ``show stat`` -> target health verdicts
process.py            one HAProxy process: start, seamless reload, stop, admin socket
dataplane.py          one load balancer: start | reload | runtime commands; observations
reconciler.py         watches /elb/, drives every data plane, writes health and status
hosts.py              DNS names in the hosts file
"""
