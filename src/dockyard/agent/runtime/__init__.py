"""Container runtimes behind one protocol: Docker (real containers) and a simulated, hollow one."""
