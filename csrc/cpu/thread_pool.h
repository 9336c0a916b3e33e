// The CPU sweep's worker threads: a small pool in place of OpenMP's parallel regions.
//
// Why not OpenMP: a parallel region ends at a barrier that every thread of the team must
// reach, and libgomp's threads spin there (GOMP_SPINCOUNT and OMP_WAIT_POLICY are read once,
// when the library loads, and torch loads it first, so the package cannot set them). When
// another process keeps a core busy, the scheduler parks one of the team's threads while
// the others spin on the core it could use, and each region lasts until the spinning gives
// up or the parked thread gets its turn: 14-42 ms per call on 2 cores with one or two busy
// processes, where one thread takes 0.2-0.6 ms (benchmarks/README.md, "Threads under load").
//
// Here the calling thread does the work itself and workers only help:
// * items are claimed one at a time from a shared counter, so a worker the scheduler has
//   not run holds up nothing: whoever is running takes the next item;
// * the caller waits only for items a worker has already claimed, and it waits on a
//   condition variable, not spinning, so a parked worker can finish on the caller's core;
// * idle workers sleep on a condition variable (no spinning that takes a core from others);
// * the caller wakes the workers only once a step has run for kWakeDelay: shorter steps
//   (a sweep of a few points) run on the caller alone, without the cost of a wake-up
//   (0.3 ms per call under load, measured); once one step of a sweep has woken them, its
//   later steps wake them at once (`eager`), so a sweep pays the delay once.
// Which thread runs an item never changes what the item computes, so results written to
// per-item slots do not depend on the number of threads.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

#if defined(__linux__)
#include <pthread.h>
#endif

namespace genni {

class ThreadPool {
 public:
  // How long a step runs on the calling thread before it wakes the workers.
  static constexpr std::chrono::microseconds kWakeDelay{100};

  // Runs body(item, slot) for every item in [0, items), on the calling thread (slot 0) and
  // up to threads - 1 workers (slots 1..threads - 1, each used by one thread at a time);
  // returns when every item has run. The workers are woken at once when `eager` is set,
  // else after kWakeDelay (and then `eager` is set, for the caller's next steps). While
  // another call runs on the pool (another Python thread, or a call from inside body),
  // this one runs on the calling thread alone. body must not throw.
  template <typename Body>
  static void run(int64_t items, int threads, bool& eager, const Body& body) {
    if (items <= 0) return;
    ThreadPool* pool = threads > 1 && items > 1 ? &instance() : nullptr;
    std::unique_lock<std::mutex> busy;
    if (pool != nullptr) busy = std::unique_lock<std::mutex>(pool->busy_, std::try_to_lock);
    if (pool == nullptr || !busy.owns_lock()) {
      for (int64_t i = 0; i < items; ++i) body(i, 0);
      return;
    }
    auto job = std::make_shared<Job>();
    job->items = items;
    job->helpers = pool->grow(threads - 1);
    job->context = &body;
    job->call = [](const void* context, int64_t item, int slot) {
      (*static_cast<const Body*>(context))(item, slot);
    };
    pool->publish(job);
    if (eager) pool->wake();
    const auto wake_at = std::chrono::steady_clock::now() + kWakeDelay;
    while (run_one(*job, 0)) {
      if (!eager && std::chrono::steady_clock::now() >= wake_at) {
        pool->wake();
        eager = true;
      }
    }
    std::unique_lock<std::mutex> lock(job->mutex);
    job->finished_cv.wait(lock, [&] { return job->finished; });
  }

 private:
  // One call's items. Workers hold it by shared_ptr, so one that wakes after the call has
  // returned finds the counter spent and calls nothing.
  struct Job {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::atomic<int> joined{0};  // workers that took a slot
    int64_t items = 0;
    int helpers = 0;
    const void* context = nullptr;
    void (*call)(const void*, int64_t, int) = nullptr;
    std::mutex mutex;
    std::condition_variable finished_cv;
    bool finished = false;
  };

  static ThreadPool& instance() {
    // One pool per process. A child made by fork() has none of the parent's threads, and
    // the parent's mutexes may be held there, so it makes its own (the parent's is left).
    static std::atomic<ThreadPool*> pool{nullptr};
    static std::atomic<pid_t> owner{0};
    static std::mutex create;
    const pid_t pid = getpid();
    ThreadPool* current = pool.load(std::memory_order_acquire);
    if (current != nullptr && owner.load(std::memory_order_acquire) == pid) return *current;
    std::lock_guard<std::mutex> lock(create);
    current = pool.load(std::memory_order_acquire);
    if (current == nullptr || owner.load(std::memory_order_acquire) != pid) {
      current = new ThreadPool();  // never deleted: its workers sleep until the process ends
      owner.store(pid, std::memory_order_release);
      pool.store(current, std::memory_order_release);
    }
    return *current;
  }

  // Claims and runs one item; false once there is none left.
  static bool run_one(Job& job, int slot) {
    const int64_t item = job.next.fetch_add(1, std::memory_order_relaxed);
    if (item >= job.items) return false;
    job.call(job.context, item, slot);
    if (job.done.fetch_add(1, std::memory_order_acq_rel) + 1 == job.items) {
      std::lock_guard<std::mutex> lock(job.mutex);
      job.finished = true;
      job.finished_cv.notify_one();
    }
    return true;
  }

  // Starts workers up to `wanted` (fewer if the system refuses threads); returns how many
  // there are. The caller alone can finish any job, so a refusal only costs speed.
  int grow(int wanted) {
    std::lock_guard<std::mutex> lock(mutex_);
    while (workers_ < wanted) {
      try {
        std::thread worker(&ThreadPool::worker_loop, this);
#if defined(__linux__)
        pthread_setname_np(worker.native_handle(), "genni-cpu");  // as ps and top show it
#endif
        worker.detach();
      } catch (const std::system_error&) {
        break;
      }
      ++workers_;
    }
    return std::min(workers_, wanted);
  }

  void publish(const std::shared_ptr<Job>& job) {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = job;
    ++generation_;
  }

  void wake() {
    std::lock_guard<std::mutex> lock(mutex_);
    wake_.notify_all();
  }

  void worker_loop() {
    uint64_t seen = 0;
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        job = job_;
      }
      const int slot = job->joined.fetch_add(1, std::memory_order_relaxed) + 1;
      if (slot > job->helpers) continue;
      while (run_one(*job, slot)) {
      }
    }
  }

  std::mutex busy_;   // held by the call that runs on the pool
  std::mutex mutex_;  // guards job_, generation_, workers_ and the workers' sleep
  std::condition_variable wake_;
  std::shared_ptr<Job> job_;
  uint64_t generation_ = 0;
  int workers_ = 0;
};

}  // namespace genni
