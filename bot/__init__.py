"""The channels people reach the bot through, one package each with both directions inside it:
bot.slack (the Slack app and its relay), bot.github (webhooks in, PR comments and statuses out) and
bot.localslack (a local Slack workspace that speaks the Web API and socket mode)."""
