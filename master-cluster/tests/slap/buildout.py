#!/usr/bin/env python3
"""A stand-in for zc.buildout, for the SLAP client test (buildout cannot download here).

slapgrid runs buildout three ways, and this script answers each as a software release would:
- `... bootstrap`: writes `bin/buildout` (this script) in `buildout:directory`, or in
  `buildout:bin-directory`;
- software (`-c buildout.cfg` whose `[buildout] extends` is the release's URL, a local path
  here): copies the release's `instance.cfg` beside it into the software directory;
- instance (run in a partition, whose `buildout.cfg` has slapgrid's `[slap-connection]`): what
  the test's release does, through the real `slapos.slap` library and the partition's own
  certificate. Type `default` (the root) requests a `child` and a shared instance `shared-1`
  (hosted by a `default` instance: by itself), publishes for every shared instance it hosts,
  and publishes `url`, `child-url` and `shared-url` once its child and its shared instance
  answer; until then it fails, and slapgrid runs it again. With the parameter `shrink=yes` it
  no longer requests the shared instance (the tree shrinks: slapgrid then tells the master
  which children are still requested). Type `child` publishes its `url`.
Every run appends what it saw to `runs.jsonl` in the directory it ran in.
"""
import configparser
import json
import os
import shutil
import sys


def arguments():
    config, command, options = None, None, {}
    args = sys.argv[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-c":
            config = args[i + 1]
            i += 2
            continue
        if arg.startswith("-"):
            pass
        elif "=" in arg and ":" in arg.split("=", 1)[0]:
            key, value = arg.split("=", 1)
            options[key] = value
        else:
            command = arg
        i += 1
    return config, command, options


def bootstrap(options):
    directory = options.get("buildout:directory", os.getcwd())
    bin_directory = options.get("buildout:bin-directory", os.path.join(directory, "bin"))
    os.makedirs(bin_directory, exist_ok=True)
    with open(os.path.abspath(__file__)) as source:
        body = source.read().split("\n", 1)[1]
    target = os.path.join(bin_directory, "buildout")
    with open(target, "w") as out:
        out.write("#!%s\n%s" % (sys.executable, body))
    os.chmod(target, 0o755)


def record(entry):
    with open("runs.jsonl", "a") as out:
        out.write(json.dumps(entry, sort_keys=True) + "\n")


def software(profile, options):
    release = profile.get("buildout", "extends")
    directory = options.get("buildout:directory", os.getcwd())
    shutil.copy(os.path.join(os.path.dirname(release), "instance.cfg"), directory)
    record({"software": release})


def instance(profile):
    from slapos import slap
    from slapos.slap.exception import NotFoundError

    connection = dict(profile.items("slap-connection"))
    master = slap.slap()
    master.initializeConnection(
        connection["server-url"],
        key_file=connection["key-file"],
        cert_file=connection["cert-file"],
    )
    partition = master.registerComputerPartition(
        connection["computer-id"], connection["partition-id"]
    )
    parameters = partition.getInstanceParameterDict()
    software_type = partition.getType()
    ipv6 = [ip for _, ip in parameters["ip_list"] if ":" in ip]
    address = "http://[%s]" % ipv6[0] if ipv6 else "http://127.0.0.1"
    seen = {
        "type": software_type,
        "state": partition.getState(),
        "title": parameters.get("instance_title"),
        "shared": [s["slave_reference"] for s in parameters.get("slave_instance_list", [])],
    }
    if software_type == "child":
        partition.setConnectionDict({"url": address + "/child"})
        record(seen)
        return 0
    # Publish for the shared instances this one hosts first: a request below then answers
    # what was published.
    for shared in parameters.get("slave_instance_list", []):
        partition.setConnectionDict(
            {"url": address + shared.get("path", "/")},
            slave_reference=shared["slave_reference"],
        )
    release = connection["software-release-url"]
    child = partition.request(
        software_release=release,
        software_type="child",
        partition_reference="child",
        partition_parameter_kw={"greeting": parameters.get("greeting", "")},
    )
    wanted = [("child-url", child)]
    if parameters.get("shrink") != "yes":
        shared = partition.request(
            software_release=release,
            software_type="default",
            partition_reference="shared-1",
            shared=True,
            partition_parameter_kw={"path": "/shared"},
        )
        wanted.append(("shared-url", shared))
    published = {"url": address + "/"}
    for key, requested in wanted:
        try:
            published[key] = requested.getConnectionParameter("url")
        except (NotFoundError, AttributeError, KeyError):
            pass
    partition.setConnectionDict(published)
    seen["published"] = published
    record(seen)
    # A promise: not done until the child and the shared instance answer.
    return 0 if len(published) == 1 + len(wanted) else 1


def main():
    config, command, options = arguments()
    if command == "bootstrap":
        bootstrap(options)
        return 0
    profile = configparser.RawConfigParser(strict=False, interpolation=None)
    profile.read(config or "buildout.cfg")
    if profile.has_section("slap-connection"):
        return instance(profile)
    software(profile, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
