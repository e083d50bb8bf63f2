#pragma once
// Units: every quantity carries its unit in its type name and, in files, in its text ("80 GB").
#include <string>
#include <vector>

namespace flopwise {

using Bytes = double;
using Seconds = double;
using Flops = double;
using BytesPerSecond = double;
using FlopsPerSecond = double;

inline constexpr double kSecondsPerHour = 3600.0;
inline constexpr double kSecondsPerDay = 86400.0;
inline constexpr Bytes kGiB = 1024.0 * 1024.0 * 1024.0;
inline constexpr Bytes kGB = 1e9;

enum class Dimension { kBytes, kBandwidth, kTime };

// Parses "80 GB", "3.35 TB/s", "400 Gb/s", "5 us" into bytes, bytes per second or seconds.
// Throws InputError naming `source` and `field` for a missing number, a negative value or
// a unit that does not belong to `dimension`.
double parse_quantity(const std::string& text, Dimension dimension, const std::string& source,
                      const std::string& field);

// The items of a comma-separated list ("a,b,c"), empty ones left out.
std::vector<std::string> split_list(const std::string& text);

// Human formatting for tables: "1.23 GiB", "4.5 ms", "6.35M".
std::string format_bytes(Bytes bytes);
std::string format_seconds(Seconds seconds);
std::string format_count(double value);

}  // namespace flopwise
