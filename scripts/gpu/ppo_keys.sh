#!/usr/bin/env bash
# Sourced by the GPU PPO scripts: `set_ppo_keys FILE` sets the `[ppo]` keys of $PPO_KEYS in
# the config FILE, e.g. PPO_KEYS='optimizer_state = "host"; micro_batch = 1': a key the
# file has is replaced, another is added under `[ppo]`.
set_ppo_keys() {
  local config=$1 kv key
  IFS=';' read -ra pairs <<< "${PPO_KEYS:-}"
  for kv in "${pairs[@]}"; do
    kv=$(sed 's/^ *//; s/ *$//' <<< "$kv")
    [ -z "$kv" ] && continue
    key=${kv%% =*}
    if grep -q "^$key = " "$config"; then sed -i "s|^$key = .*|$kv|" "$config"; else sed -i "s|^\[ppo\]$|[ppo]\n$kv|" "$config"; fi
  done
}
