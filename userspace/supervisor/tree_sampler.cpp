#include "supervisor/tree_sampler.h"

#include <utility>

#include "supervisor/process_tree.h"

namespace lbd {

TreeSampler::Sample TreeSampler::take(const std::vector<pid_t>& roots, const std::vector<uint16_t>& ports) {
  Sample sample;
  if (roots.empty()) return sample;
  const auto trees = process_trees(roots);
  if (!trees) {
    sample.error = "process trees: " + trees.error().message();
    return sample;
  }
  const auto open = open_connections(*trees, ports);
  if (!open) sample.error = "open connections: " + open.error().message();
  for (size_t i = 0; i < roots.size(); i++) {
    Tree& tree = sample.trees[roots[i]];
    tree.rss_bytes = tree_rss_bytes((*trees)[i]);
    if (open) tree.open = (*open)[i];
  }
  return sample;
}

TreeSampler::TreeSampler(std::vector<uint16_t> ports)
    : ports_(std::move(ports)), thread_([this](std::stop_token stop) { run(stop); }) {}

TreeSampler::~TreeSampler() {
  thread_.request_stop();  // wakes wait_for below
  thread_.join();
}

void TreeSampler::watch(std::vector<pid_t> roots, std::chrono::milliseconds interval) {
  std::lock_guard lock(mutex_);
  const bool sooner = interval < interval_ || (roots_.empty() && !roots.empty());
  roots_ = std::move(roots);
  interval_ = interval;
  if (sooner) {
    sample_now_ = true;
    wake_.notify_one();
  }
}

std::optional<TreeSampler::Sample> TreeSampler::newest() {
  std::lock_guard lock(mutex_);
  return std::exchange(newest_, std::nullopt);
}

void TreeSampler::run(std::stop_token stop) {
  std::unique_lock lock(mutex_);
  while (!stop.stop_requested()) {
    if (!roots_.empty()) {
      const std::vector<pid_t> roots = roots_;
      lock.unlock();
      Sample sample = take(roots, ports_);
      lock.lock();
      newest_ = std::move(sample);
    }
    wake_.wait_for(lock, stop, interval_, [this] { return sample_now_; });
    sample_now_ = false;
  }
}

}  // namespace lbd
