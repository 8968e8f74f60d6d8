"""Static check of the Docker deployment (docker/compose.yaml), for machines without Docker.

Usage: compose_check.py COMPOSE_FILE --base DIR --help-of pacs=FILE --help-of pacs-ai-worker=FILE

  COMPOSE_FILE  the compose file (YAML); relative paths in it are taken from --base (the folder
                the real file lives in), so that a mutated copy elsewhere is checked the same
  --help-of     NAME=FILE: the --help output of the program an image runs (its ENTRYPOINT):
                `pacs serve --help`, `pacs-ai-worker --help`; the options and PACS_* variables
                a service may use are the ones listed there

Checks, for every service:
  - build: the context folder and the Dockerfile exist, and so does every file the Dockerfile
    COPYs from the context;
  - the program it runs (the Dockerfile's ENTRYPOINT, or the image of a service built so):
    every --flag of its command and every PACS_* variable of its environment (and of its
    Dockerfile's ENV) is one that program accepts (`serve` first for pacs); a variable is also
    allowed when a file the Dockerfile copies from docker/ reads it (a health check script);
  - ports: a node publishes only its HTTP, DIMSE or DIMSE TLS port as its settings give them
    (flags over environment over Dockerfile ENV over the defaults of the help text); a proxy
    only ports its mounted nginx configuration listens on;
  - volumes: a bind mount's source exists; a named volume is declared under `volumes:`;
  - networks and depends_on name what the file declares; each PACS_TRUSTED_PROXIES address is
    some service's ipv4_address;
  - every ${VARIABLE} the file interpolates is in env.example beside it;
  - a mounted nginx configuration proxies only to services of the file, at ports they listen on.
Prints what it found; exit status 1 when anything is wrong, 0 otherwise.
"""

import argparse
import ipaddress
import os
import re
import sys

import yaml

NODE_PORT_SETTINGS = {
    "PACS_HTTP_PORT": "--http-port",
    "PACS_DIMSE_PORT": "--dimse-port",
    "PACS_DIMSE_TLS_PORT": "--dimse-tls-port",
}


class Program:
    """What a program accepts, from its --help text (clap's format)."""

    def __init__(self, name, text):
        self.name = name
        self.flags = set(re.findall(r"(?m)^\s+(?:-\w, )?(--[a-z0-9][a-z0-9-]*)", text))
        self.variables = set(re.findall(r"\[env: ([A-Z0-9_]+)", text))
        # defaults of the port settings, from "[default: N]" in each option's help
        self.defaults = {}
        for variable in NODE_PORT_SETTINGS:
            m = re.search(
                r"\[default: (\d+)\][^\[]*\[env: " + variable + r"\b", text, re.S
            )
            if m:
                self.defaults[variable] = int(m.group(1))

    def __repr__(self):
        return f"Program({self.name})"


def parse_dockerfile(path):
    """(entrypoint program, {ENV name: value}, [COPY sources from the context])."""
    text = open(path, encoding="utf-8").read()
    # join continuation lines
    text = re.sub(r"\\\n", " ", text)
    entrypoint, env, copies = None, {}, []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ENTRYPOINT":
            m = re.match(r'\[\s*"([^"]+)"', rest.strip())
            entrypoint = os.path.basename(m.group(1) if m else rest.split()[0])
        elif word == "ENV":
            for name, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S*)", rest):
                env[name] = value
        elif word in ("COPY", "ADD"):
            parts = rest.split()
            if any(p.startswith("--from") for p in parts):
                continue
            parts = [p for p in parts if not p.startswith("--")]
            copies.extend(parts[:-1])
    return entrypoint, env, copies


def interpolated(value):
    return isinstance(value, str) and "${" in value


def listen_ports(nginx_text):
    return {int(p) for p in re.findall(r"(?m)^\s*listen\s+(?:[\d.]+:)?(\d+)", nginx_text)}


class Checker:
    def __init__(self, compose_path, base, programs):
        self.base = base
        self.programs = programs
        self.problems = []
        with open(compose_path, encoding="utf-8") as f:
            self.text = f.read()
        self.doc = yaml.safe_load(self.text)
        self.services = self.doc.get("services") or {}

    def problem(self, where, what):
        self.problems.append(f"{where}: {what}")

    def path(self, relative):
        return os.path.normpath(os.path.join(self.base, relative))

    # -- what each service runs -------------------------------------------------------------

    def build_info(self, name, service):
        """(program, Dockerfile ENV, files the Dockerfile copies from docker/) of a service."""
        build = service.get("build")
        if build is None:
            return None
        if isinstance(build, str):
            build = {"context": build}
        context = self.path(build.get("context", "."))
        if not os.path.isdir(context):
            self.problem(name, f"build context {build.get('context')} does not exist")
            return None
        dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
        if not os.path.isfile(dockerfile):
            self.problem(name, f"Dockerfile {build.get('dockerfile')} does not exist")
            return None
        entrypoint, env, copies = parse_dockerfile(dockerfile)
        scripts = []
        for source in copies:
            full = os.path.join(context, source)
            if not os.path.exists(full):
                self.problem(name, f"{build.get('dockerfile')} copies {source}, which does not exist")
            elif os.path.isfile(full) and source.startswith("docker/"):
                scripts.append(full)
        program = self.programs.get(entrypoint)
        if program is None:
            self.problem(name, f"its image runs {entrypoint!r}, a program this check has no --help of")
        return program, env, scripts

    def resolve(self):
        by_image = {}
        self.runs = {}
        for name, service in self.services.items():
            if not isinstance(service, dict):
                self.problem(name, "not a mapping")
                continue
            if "image" not in service and "build" not in service:
                self.problem(name, "neither image nor build")
            info = self.build_info(name, service)
            if info is not None:
                self.runs[name] = info
                if "image" in service:
                    by_image[service["image"]] = info
        for name, service in self.services.items():
            if name not in self.runs and isinstance(service, dict) and service.get("image") in by_image:
                self.runs[name] = by_image[service["image"]]

    # -- checks ------------------------------------------------------------------------------

    @staticmethod
    def environment(service):
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {str(k): ("" if v is None else str(v)) for k, v in env.items()}

    @staticmethod
    def command(service):
        command = service.get("command") or []
        if isinstance(command, str):
            command = command.split()
        return [str(c) for c in command]

    def check_program_use(self, name, service):
        if name not in self.runs or self.runs[name][0] is None:
            return
        program, dockerfile_env, scripts = self.runs[name]
        read_by_scripts = set()
        for script in scripts:
            read_by_scripts |= set(re.findall(r"\b(PACS_[A-Z0-9_]+)", open(script, encoding="utf-8").read()))
        command = self.command(service)
        flags = command
        if program.name == "pacs":
            if command and command[0] != "serve":
                self.problem(name, f"runs `pacs {command[0]}`, not `pacs serve`")
            flags = command[1:]
        for arg in flags:
            if arg.startswith("--"):
                flag = arg.split("=", 1)[0]
                if flag not in program.flags:
                    self.problem(name, f"{program.name} has no option {flag}")
        for source, env in (("environment", self.environment(service)), ("Dockerfile ENV", dockerfile_env)):
            for variable in env:
                if not variable.startswith("PACS_"):
                    continue
                if variable not in program.variables and variable not in read_by_scripts:
                    self.problem(name, f"{source}: {variable} is not a variable of {program.name} (nor read by its image's scripts)")

    def node_ports(self, name, service):
        """The ports a pacs node listens on, as its settings give them."""
        program, dockerfile_env, _ = self.runs[name]
        env = dict(dockerfile_env)
        env.update(self.environment(service))
        command = self.command(service)
        ports = set()
        for variable, flag in NODE_PORT_SETTINGS.items():
            value = None
            for i, arg in enumerate(command):
                if arg == flag and i + 1 < len(command):
                    value = command[i + 1]
                elif arg.startswith(flag + "="):
                    value = arg.split("=", 1)[1]
            if value is None:
                value = env.get(variable)
            if value is None:
                value = program.defaults.get(variable)
            try:
                ports.add(int(value))
            except (TypeError, ValueError):
                self.problem(name, f"{variable} is {value!r}, not a port")
        return ports

    def mounted_nginx(self, service):
        for volume in service.get("volumes") or []:
            if isinstance(volume, str) and volume.startswith(".") and ":/etc/nginx/" in volume:
                path = self.path(volume.split(":", 1)[0])
                if os.path.isfile(path):
                    return open(path, encoding="utf-8").read()
        return None

    def listening(self, name):
        """The ports a service listens on, when this check can tell; else None."""
        service = self.services.get(name)
        if not isinstance(service, dict):
            return None
        if name in self.runs and self.runs[name][0] is not None and self.runs[name][0].name == "pacs":
            return self.node_ports(name, service)
        nginx = self.mounted_nginx(service)
        if nginx is not None:
            return listen_ports(nginx)
        return None

    def check_ports(self, name, service):
        listening = self.listening(name)
        for mapping in service.get("ports") or []:
            spec = str(mapping).split("/", 1)[0]
            container = spec.rsplit(":", 1)[-1]
            try:
                port = int(container)
            except ValueError:
                self.problem(name, f"port {mapping!r}: {container!r} is not a container port")
                continue
            if listening is not None and port not in listening:
                self.problem(name, f"publishes container port {port}, but it listens on {sorted(listening)}")

    def check_volumes(self, name, service):
        declared = set((self.doc.get("volumes") or {}).keys())
        for volume in service.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":", 1)[0]
            if source is None:
                continue
            if source.startswith((".", "/", "~")):
                if not os.path.exists(self.path(source)):
                    self.problem(name, f"mounts {source}, which does not exist")
            elif source not in declared:
                self.problem(name, f"volume {source} is not declared under volumes:")

    def check_references(self, name, service):
        networks = set((self.doc.get("networks") or {}).keys())
        used = service.get("networks") or []
        for network in used if isinstance(used, list) else used.keys():
            if network not in networks:
                self.problem(name, f"network {network} is not declared under networks:")
        depends = service.get("depends_on") or []
        for other in depends if isinstance(depends, list) else depends.keys():
            if other not in self.services:
                self.problem(name, f"depends on {other}, which is not a service")

    def addresses(self):
        found = {}
        for name, service in self.services.items():
            nets = service.get("networks") if isinstance(service, dict) else None
            if isinstance(nets, dict):
                for settings in nets.values():
                    if isinstance(settings, dict) and "ipv4_address" in settings:
                        found[settings["ipv4_address"]] = name
        return found

    def check_trusted_proxies(self, name, service):
        value = self.environment(service).get("PACS_TRUSTED_PROXIES")
        if not value:
            return
        addresses = self.addresses()
        for ip in value.split(","):
            ip = ip.strip()
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                self.problem(name, f"PACS_TRUSTED_PROXIES: {ip!r} is not an IP address")
                continue
            if ip not in addresses:
                self.problem(name, f"PACS_TRUSTED_PROXIES: no service has the address {ip}")

    def check_subnets(self):
        subnets = []
        for network in (self.doc.get("networks") or {}).values():
            for config in ((network or {}).get("ipam") or {}).get("config") or []:
                if "subnet" in config:
                    subnets.append(ipaddress.ip_network(config["subnet"]))
        for ip, name in self.addresses().items():
            if subnets and not any(ipaddress.ip_address(ip) in s for s in subnets):
                self.problem(name, f"address {ip} is in no declared subnet")

    def check_interpolation(self):
        example = os.path.join(self.base, "env.example")
        names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", self.text.replace("$$", "")))
        if not names:
            return
        if not os.path.isfile(example):
            self.problem("compose file", "interpolates variables but there is no env.example")
            return
        known = set(re.findall(r"(?m)^([A-Za-z_][A-Za-z0-9_]*)=", open(example, encoding="utf-8").read()))
        for variable in sorted(names - known):
            self.problem("compose file", f"${{{variable}}} is not in env.example")

    def check_nginx(self, name, service):
        nginx = self.mounted_nginx(service)
        if nginx is None:
            return
        upstreams = set(re.findall(r"(?m)^\s*upstream\s+([\w-]+)", nginx))
        targets = re.findall(r"(?m)^\s*server\s+([\w.-]+):(\d+)\s*;", nginx)
        targets += [
            (host, port or "80")
            for host, port in re.findall(r"proxy_pass\s+https?://([\w.-]+)(?::(\d+))?", nginx)
            if host not in upstreams
        ]
        for host, port in targets:
            if host not in self.services:
                self.problem(name, f"nginx proxies to {host}, which is not a service")
                continue
            listening = self.listening(host)
            if listening is not None and int(port) not in listening:
                self.problem(name, f"nginx proxies to {host}:{port}, but {host} listens on {sorted(listening)}")

    def run(self):
        if not self.services:
            self.problem("compose file", "no services")
            return
        self.resolve()
        for name, service in self.services.items():
            if not isinstance(service, dict):
                continue
            self.check_program_use(name, service)
            self.check_ports(name, service)
            self.check_volumes(name, service)
            self.check_references(name, service)
            self.check_trusted_proxies(name, service)
            self.check_nginx(name, service)
        self.check_subnets()
        self.check_interpolation()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("compose")
    parser.add_argument("--base", required=True)
    parser.add_argument("--help-of", action="append", default=[])
    args = parser.parse_args()
    programs = {}
    for item in args.help_of:
        name, _, path = item.partition("=")
        programs[name] = Program(name, open(path, encoding="utf-8").read())
        if not programs[name].flags or not programs[name].variables:
            print(f"{path}: no options found in the help of {name}", file=sys.stderr)
            return 1
    checker = Checker(args.compose, args.base, programs)
    checker.run()
    for p in checker.problems:
        print(p)
    if checker.problems:
        print(f"{len(checker.problems)} problem(s)")
        return 1
    print(f"ok: {len(checker.services)} services, {len(checker.runs)} running pacs programs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
