"""The SIP stack: messages, transports, transactions and the proxy core (RFC 3261). Sans-I/O.

This package knows nothing of presence, the cloud or the office: `edge/`,
`presence/` and `local/` build on it.
"""
