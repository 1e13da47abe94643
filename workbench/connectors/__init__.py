"""Channel connectors (the composing part of workbench): the formats each channel speaks.

`delivery` sends queued outbound interactions through the channel's sender; `email` builds and
sends mail through Django's email backend (SMTP, an anymail provider, or the local outbox);
`meta` and `x` parse the social webhooks (doors in `meta_views`, `x_views`; shared checks and
the all-or-nothing batch in `webhooks`) and send replies through `provider_api`; `receipts`
moves an outbound message's status forward when a provider reports on it.
"""
