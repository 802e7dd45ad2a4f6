"""Survivable mode: what the appliance does with calls while the cloud PBX is unreachable."""
