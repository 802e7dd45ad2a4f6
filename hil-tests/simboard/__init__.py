"""The simulated board: what stands in for the hardware when no board is on the desk.

A serial console on a pty (boot log, login prompt, a shell), power on and off
by command, and the agent running "on the board" in a network namespace
`edge` whose lan0 faces the namespace `lan` (phones) and whose wan0 faces the
namespace `cloud` (Kamailio as the cloud PBX). Everything lives under
/run/vaxelbox-simboard and in those three namespaces, and `python -m simboard
down` removes it all.
"""
