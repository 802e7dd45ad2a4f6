"""Zero-touch provisioning of desk phones and DECT bases.

The library identifies a device from its request, decides whether it may have
the file it asks for, and renders that file from the site model. It knows
nothing of SIP transport; the agent runs its servers (`http`, `pnp`).
"""
