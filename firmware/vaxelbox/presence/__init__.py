"""The appliance as the phones' presence server: busy lamps (RFC 4235 dialog events) and activity
(RFC 3863 PIDF with RFC 4480 RPID), answered from a cache fed by one upstream subscription per
watched colleague and by the appliance's own view of every call that crosses it.

    model.py          the line states and dialogs every other module speaks
    dialog_info.py    application/dialog-info+xml, rendered per watcher and parsed from the cloud
    pidf.py           application/pidf+xml with RPID activities, for `Event: presence`
    cache.py          per user: the merge of the cloud's view and the office's own
    subscription.py   watchers' subscriptions (RFC 6665 notifier), sans-I/O
    subscriber.py     the upstream subscription per watched user (RFC 6665 subscriber), sans-I/O
    calls.py          the office's own view of its calls, as each user's dialogs, sans-I/O
    cloud.py          the subscriptions at the cloud, sent and answered on the cloud's flow
    server.py         the service in the relay's chain: watchers, fan-out, the store, vaxelctl
"""
