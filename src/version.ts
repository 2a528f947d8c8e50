/** mq-hotplug's version: `--version`, and what the CLI and the agent compare before a command crosses. */
export const VERSION = '0.1.0';
