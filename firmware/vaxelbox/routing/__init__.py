"""Routing policy as chains of small processors (reSIProcate repro's shape): request, response and
target chains, and the mode gate that picks online (edge/) or local (local/) processors."""
