"""A fake clock that drives sans-I/O transactions: it runs their timers and records what they do."""

from vaxelbox.sip.transaction import Action, Send, StartTimer, StopTimer, Terminated, Transaction


class Driver:
    """Executes a transaction's actions the way the asyncio driver does, on simulated time."""

    def __init__(self, transaction: Transaction) -> None:
        self.transaction = transaction
        self.now = 0.0
        self.timers: dict[str, float] = {}
        self.log: list[tuple[float, Action]] = []

    def run(self, actions: list[Action]) -> list[Action]:
        for action in actions:
            self.log.append((self.now, action))
            if isinstance(action, StartTimer):
                self.timers[action.name] = self.now + action.delay
            elif isinstance(action, StopTimer):
                self.timers.pop(action.name, None)
            elif isinstance(action, Terminated):
                self.timers.clear()
        return actions

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass, firing every timer that falls due, in order."""
        end = self.now + seconds
        while self.timers:
            name, due = min(self.timers.items(), key=lambda item: item[1])
            if due > end:
                break
            del self.timers[name]
            self.now = due
            self.run(self.transaction.on_timer(name))
        self.now = end

    def sent_at(self) -> list[float]:
        return [at for at, action in self.log if isinstance(action, Send)]

    def of(self, kind: type) -> list:
        return [action for _, action in self.log if isinstance(action, kind)]
