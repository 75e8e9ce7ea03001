/** `--log-level` and `--log-format`, which `server`, `connect` and `quickstart` share; they override the config file. */
import { Option, type Command } from 'commander';
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '../shared/config-fields.js';

export interface LogFlags {
  logLevel?: LogLevel;
  logFormat?: LogFormat;
}

export function logOptions(command: Command): Command {
  return command
    .addOption(new Option('--log-level <level>', 'log level (overrides the config file)').choices(LOG_LEVELS))
    .addOption(new Option('--log-format <format>', 'log format (overrides the config file)').choices(LOG_FORMATS));
}
