"""Loading the policy directory in fixed steps, and keeping the last good revision serving.

    read YAML (yamlconf) → validate (schema; unknown keys are errors) → compile the checks → PolicySet

`load(directory)` is the one compiler: the gateway, `gateway policy check` and `gateway policy test` all use it.
Every problem of every file is reported at once as `file:line: field: message`. The revision is a hash of
the files' names and bytes, so every worker that loads the same files serves the same revision.

`PolicyStore` holds the current PolicySet and swaps it atomically: a request resolves its policy once, from
the set that was current when it started. A reload happens when a file changes (polled, and only once the
directory's content has been still for a moment, so a half-written file is not loaded; the files are read,
hashed, about once a second, which costs little for text files) and on SIGHUP; a reload that
fails is logged, counted and shown in /readyz, and the previous revision keeps serving.
"""

import asyncio
import hashlib
import logging
import time
from pathlib import Path

from gateway import yamlconf
from gateway.policy.compiled import Loaded, PolicySet, compile_check
from gateway.policy.schema import PolicyFile
from gateway.yamlconf import ConfigError, Problem

log = logging.getLogger("gateway.policy")
SUFFIXES = (".yaml", ".yml")
TEST_SUFFIXES = (".test.yaml", ".test.yml")


def policy_files(directory: Path) -> list[Path]:
    """The policy files of a directory (test files, `*.test.yaml`, are not policies), sorted by name."""
    if not directory.is_dir():
        raise ConfigError([Problem(str(directory), 0, "", "not a directory")])
    return sorted(
        path
        for path in directory.iterdir()
        if path.is_file() and path.name.endswith(SUFFIXES) and not path.name.endswith(TEST_SUFFIXES)
    )


def revision(directory: Path) -> str:
    """The hash of the policy files' names and bytes as they are now."""
    digest = hashlib.sha256()
    for path in policy_files(directory):
        try:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        except OSError:
            digest.update(path.name.encode() + b"\0unreadable\0")
    return digest.hexdigest()[:16]


def load(directory: Path, attempts: int = 5) -> PolicySet:
    """Read, validate and compile every policy file of `directory`; raise ConfigError listing every problem.

    The files are hashed before and after they are read: when something wrote to them meanwhile (a checkout
    in progress, a symlink swapped), the half-old, half-new set is thrown away and the directory read again.
    """
    for _ in range(attempts):
        before = revision(directory)
        policies = _load(directory, before)
        if revision(directory) == before:
            return policies
        time.sleep(0.05)
    raise ConfigError([Problem(str(directory), 0, "", "the policy files kept changing while they were read")])


def _load(directory: Path, digest: str) -> PolicySet:
    problems: list[Problem] = []
    loaded: list[Loaded] = []
    files = policy_files(directory)
    for path in files:
        try:
            loaded.extend(_load_file(path))
        except ConfigError as exc:
            problems.extend(exc.problems)
    problems.extend(_duplicates(loaded))
    if problems:
        raise ConfigError(problems)
    return PolicySet(digest, loaded, [str(p) for p in files])


def _load_file(path: Path) -> list[Loaded]:
    data = yamlconf.read(path)
    if not isinstance(data, yamlconf.LineDict):
        raise ConfigError([Problem(str(path), 1, "", "expected a mapping with a `policies` list")])
    document = yamlconf.validate(PolicyFile, data, path)
    out, problems = [], []
    for index, policy in enumerate(document.policies):
        node = data["policies"][index]
        checks = {}
        for number, rule in enumerate(policy.rules):
            try:
                check = compile_check(rule)
            except ValueError as exc:
                rule_node = node["rules"][number]
                problems.append(Problem(str(path), rule_node.line, f"policies[{index}].rules[{number}]", str(exc)))
                continue
            if check is not None:
                checks[rule.name] = check
        out.append(Loaded(policy, str(path), node.line, checks))
    if problems:
        raise ConfigError(problems)
    return out


def _duplicates(loaded: list[Loaded]) -> list[Problem]:
    seen: dict[str, Loaded] = {}
    problems = []
    for item in loaded:
        first = seen.setdefault(item.policy.name, item)
        if first is not item:
            where = f"{first.file}:{first.line}"
            message = f"duplicate policy name {item.policy.name!r} (first defined at {where})"
            problems.append(Problem(item.file, item.line, "name", message))
    return problems


def _revision_or_none(directory: Path) -> str | None:
    try:
        return revision(directory)
    except ConfigError:  # the directory is gone
        return None


class PolicyStore:
    """The serving PolicySet of one worker, reloaded when the directory changes or on SIGHUP."""

    def __init__(self, directory: Path, settle: float = 0.2) -> None:
        self.directory = directory
        self.settle = settle
        self.current = load(directory)
        self._seen: str | None = self.current.revision
        self.loaded_at = time.time()
        self.reloads = 0
        self.reload_failures = 0
        self.last_error: str | None = None
        self._tasks: set[asyncio.Task[bool]] = set()

    def reload(self) -> bool:
        """Load the directory again; swap in the new set if it is valid (True), else keep the current one."""
        return self._swap(self._try_load())

    async def reload_in_thread(self) -> bool:
        """`reload`, with the reading and compiling off the event loop; only the swap happens on it."""
        return self._swap(await asyncio.to_thread(self._try_load))

    def on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload_in_thread())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _try_load(self) -> PolicySet | ConfigError:
        self._seen = _revision_or_none(self.directory)
        try:
            return load(self.directory)
        except ConfigError as exc:
            return exc

    def _swap(self, loaded: PolicySet | ConfigError) -> bool:
        if isinstance(loaded, ConfigError):
            self.reload_failures += 1
            self.last_error = str(loaded)
            log.error("policy reload failed; revision %s keeps serving:\n%s", self.current.revision, loaded)
            return False
        self.last_error = None
        if loaded.revision != self.current.revision:
            self.current, self.loaded_at = loaded, time.time()
            self.reloads += 1
            log.info("policies reloaded: revision %s, %d policies", loaded.revision, len(loaded.loaded))
        return True

    async def watch(self, interval: float) -> None:
        """Poll the directory; reload once a change has been still for `settle` seconds."""
        while True:
            await asyncio.sleep(interval)
            current = _revision_or_none(self.directory)
            if current == self._seen:
                continue
            while True:
                await asyncio.sleep(self.settle)
                latest = _revision_or_none(self.directory)
                if latest == current:
                    break
                current = latest
            await self.reload_in_thread()

    def status(self) -> dict[str, object]:
        return {
            "revision": self.current.revision,
            "policies": len(self.current.loaded),
            "files": len(self.current.files),
            "loaded_at": self.loaded_at,
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
            "last_error": self.last_error,
        }
