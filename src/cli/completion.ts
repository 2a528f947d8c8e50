/**
 * Bash completion. `mq-hotplug completion bash` prints a script made from the program itself (its
 * commands and each command's options, so they never drift), that completes VM names (running and
 * defined) and, for `remove`, the NIC ids of the VM named, through the hidden `__complete` command,
 * which reads only the state and config directories (no QMP, nothing changed).
 *
 *   source <(mq-hotplug completion bash)
 *   mq-hotplug completion bash > /usr/share/bash-completion/completions/mq-hotplug
 */
import type { Command } from 'commander';
import { DefinitionStore } from '../qemu/definition.js';
import { StateStore } from '../qemu/state.js';
import type { GlobalOptions } from './env.js';
import { writeOut } from '../util/write.js';

/** Option values that have a fixed set of choices. */
const CHOICES: Record<string, string> = {
  '--machine': 'pc q35',
  '--accel': 'auto kvm tcg',
  '--vhost': 'auto on off',
  '--queues': 'auto 1 2 4 8 16',
};
/** Options that take a path. */
const FILES = [
  '--state-dir',
  '--config-dir',
  '--qmp',
  '--events-qmp',
  '-f',
  '--file',
  '--kernel',
  '--initrd',
  '--disk',
  '--serial',
  '--qemu',
];

export function bashCompletion(program: Command): string {
  const commands = program.commands.filter((c) => !c.name().startsWith('__'));
  const globals = program.options.flatMap((o) => [o.long, o.short].filter(Boolean)).join(' ');
  const perCommand = commands
    .map((c) => {
      const opts = c.options.flatMap((o) => [o.long, o.short].filter(Boolean)).join(' ');
      return `    ${c.name()}) opts="${opts} --help" ;;`;
    })
    .join('\n');
  const takesValue = [...program.options, ...commands.flatMap((c) => c.options)]
    .filter((o) => o.required) // an optional value (--wait-guest [s]) may be followed by anything
    .flatMap((o) => [o.long, o.short].filter(Boolean));
  return `# bash completion for mq-hotplug (made by 'mq-hotplug completion bash')
_mq_hotplug() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="\${COMP_WORDS[COMP_CWORD-1]}"
  local cmd="" vm="" npos=0 i w
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    case " ${[...new Set(takesValue)].join(' ')} " in *" $w "*) ((i++)); continue ;; esac
    case "$w" in
      -*) ;;
      *) if [[ -z "$cmd" ]]; then cmd="$w"; else ((npos++)); [[ $npos -eq 1 ]] && vm="$w"; fi ;;
    esac
  done
  case "$prev" in
${Object.entries(CHOICES)
  .map(([opt, words]) => `    ${opt}) COMPREPLY=($(compgen -W "${words}" -- "$cur")); return ;;`)
  .join('\n')}
    --bridge) COMPREPLY=($(compgen -W "$(cd /sys/class/net 2>/dev/null && for b in */bridge; do echo "\${b%/bridge}"; done)" -- "$cur")); return ;;
    ${FILES.join('|')}) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  if [[ -z "$cmd" ]]; then
    COMPREPLY=($(compgen -W "${commands.map((c) => c.name()).join(' ')} ${globals} --help" -- "$cur"))
    return
  fi
  local opts=""
  case "$cmd" in
${perCommand}
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  elif [[ $npos -eq 0 && "$cmd" != vms && "$cmd" != doctor && "$cmd" != completion ]]; then
    COMPREPLY=($(compgen -W "$(mq-hotplug __complete vms 2>/dev/null)" -- "$cur"))
  elif [[ $npos -eq 1 && "$cmd" == remove ]]; then
    COMPREPLY=($(compgen -W "$(mq-hotplug __complete nics "$vm" 2>/dev/null)" -- "$cur"))
  elif [[ "$cmd" == completion ]]; then
    COMPREPLY=($(compgen -W "bash" -- "$cur"))
  fi
}
complete -F _mq_hotplug mq-hotplug
`;
}

/** `__complete vms` and `__complete nics VM`: names for the completion, one per line, from files only. */
export function completeWords(what: string, vm: string | undefined, g: GlobalOptions): void {
  const store = new StateStore(g.stateDir);
  const definitions = new DefinitionStore(g.configDir);
  const quiet = <T>(fn: () => T, fallback: T): T => {
    try {
      return fn();
    } catch {
      return fallback;
    }
  };
  let words: string[] = [];
  if (what === 'vms') words = [...new Set([...quiet(() => store.list(), []), ...quiet(() => definitions.list(), [])])];
  else if (what === 'nics' && vm) {
    const record = quiet(() => store.read(vm), undefined);
    const def = quiet(() => definitions.read(vm), undefined);
    words = [...new Set([...(record?.nics ?? []), ...(def?.nics ?? [])].map((n) => n.id))];
  }
  writeOut(
    words
      .sort()
      .map((w) => `${w}\n`)
      .join(''),
  );
}
