"""The edge in online mode: relays the phones' SIP to the cloud PBX and back, mirrors registrations,
watches the cloud's health."""
